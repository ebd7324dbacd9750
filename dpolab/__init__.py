"""dpolab: a hands-on course on LLM alignment with Direct Preference Optimization."""

__version__ = "0.1.0"
