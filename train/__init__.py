"""NIAF training and data tools, installed as the import package ``niaf_train``."""
