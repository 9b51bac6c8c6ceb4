"""The rule tables, the single source of truth for activations and losses."""
from derive.rules.activations import ACTIVATIONS, Activation, TableFunction, sigmoid, table_function, u, v
from derive.rules.losses import LOSSES, OUTPUT_ACTIVATIONS, Loss

__all__ = ["ACTIVATIONS", "Activation", "LOSSES", "Loss", "OUTPUT_ACTIVATIONS", "TableFunction",
           "sigmoid", "table_function", "u", "v"]
