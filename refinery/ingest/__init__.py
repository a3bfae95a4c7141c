"""Reading raw inputs from the inbox into the document schema."""
