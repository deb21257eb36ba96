"""What pretraining needs beside its loop, for `pipelines/pretrain.py` and `pipelines/evaluate.py` to call:
`init_from` (check and load a checkpoint to continue from), `head_warmup` (train a fresh MLM head alone first) and
`evaluation` (MLM and NSP figures of a pretrained model under fixed masks)."""
