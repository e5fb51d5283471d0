"""Push notifications: configs and the notifier that POSTs task updates to webhooks."""
