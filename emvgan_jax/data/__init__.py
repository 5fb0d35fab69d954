"""Data: EmoMV's splits read from the builders, standardised, batched by grain and put on the devices (the map of
its modules is docs/architecture.md)."""
