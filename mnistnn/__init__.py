"""mnistnn: a neural network from scratch on MNIST and Fashion-MNIST."""
