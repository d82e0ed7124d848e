"""voucher-distributor: bulk exam-voucher distribution over the Certiverse Voucher Partner API."""

__version__ = "0.1.0"
