"""One differentiable op per class, forward beside backward; public functions beside them."""
