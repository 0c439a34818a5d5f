"""Entry points of each method, named and flagged like the original repositories."""
