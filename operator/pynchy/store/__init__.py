"""The conversation store: sqlalchemy 2 models and the functions that read and write them."""
