"""torchserve-sweeper: sweep TorchServe configurations under real load and report what wins."""

__version__ = "0.1.0"
