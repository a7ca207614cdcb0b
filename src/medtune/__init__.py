"""medtune: fine-tune an open LLM into a medical question-answering assistant, evaluate it, report it."""

__version__ = "0.1.0"
