"""The layer classes; ``dtrain.nn`` re-exports them."""
