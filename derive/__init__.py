"""derive: backpropagation through time, derived with SymPy, printed as handouts and NumPy."""
