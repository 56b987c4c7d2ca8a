"""Look inside: weight and activation statistics, neuron similarity, one neuron in detail.
"""
