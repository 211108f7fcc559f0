"""cloudjhub: JupyterHub on AWS with one EC2 instance per user."""

__version__ = "0.1.0"
