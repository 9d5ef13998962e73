# The plugin's version is the Coordinator release it runs.
__version__ = "0.1.0"
