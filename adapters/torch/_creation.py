"""creation ops of adapters.torch."""
__all__: list = []
