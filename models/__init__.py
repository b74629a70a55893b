"""Tables, API schemas and Temporal payloads: the shapes the rest of the project shares."""
