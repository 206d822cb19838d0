"""srn-port: SRN-Deblur in PyTorch, TF-exact, with a TF-free checkpoint converter."""

__version__ = "0.1.0"
