"""crashhp: keep the kdump crash kernel valid across CPU and memory hotplug."""

__version__ = "0.1.0"
