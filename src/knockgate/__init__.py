"""knockgate: port knocking and single packet authorization on nftables."""

__version__ = "0.1.0"
