"""A job dashboard in the browser: overview, queues, jobs by state, job pages, recurring jobs, workers."""
