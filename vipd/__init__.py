"""vipd: a VRRPv3 virtual-IP daemon that fences its peer through a witness."""

__version__ = "0.1.0"
