"""One router per resource: jobs, query, health."""
