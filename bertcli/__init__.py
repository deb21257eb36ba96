"""bertcli: pretrain BERT from raw text, fine-tune and evaluate it on GLUE-style tasks, offline."""

__version__ = "0.1.0"
