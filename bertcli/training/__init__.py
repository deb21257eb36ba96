"""The training machinery shared by `pretrain` and `finetune`: one Accelerate loop, checkpoints, optimizer."""
