"""Stage logic for the mlcycle lifecycle: plain functions over paths and values."""
