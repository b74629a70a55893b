"""One module per provider service: its wire knowledge only (models, request mapping, answers, errors, webhooks)."""
