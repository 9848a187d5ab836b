"""The demo domain: users, emails, reports and cleanup, as requests with handlers on their queues."""
