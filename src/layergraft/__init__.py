"""layergraft: make fine-tuned transformer encoders smaller by grafting adjacent layers."""

__version__ = "0.1.0"
