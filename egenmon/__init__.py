"""egenmon: patient self-monitoring platform."""
