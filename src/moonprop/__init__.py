"""moonprop: micrograd's moons experiment as a Hydra + Lightning + MLflow pipeline."""

__version__ = "0.1.0"
