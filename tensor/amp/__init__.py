"""Mixed precision: autocast and the dynamic loss scaler."""
