"""Neural-network building blocks (public names are re-exported by ``dtrain.nn``)."""
