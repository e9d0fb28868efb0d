// Replaced by the SMTP tests when they land.
