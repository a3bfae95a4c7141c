"""Generated sample data: realistic prose and the junk a crawl contains."""
