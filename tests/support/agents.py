"""User agents the tests send: one desktop Chrome, a shopper and not a bot."""

from __future__ import annotations

#: A desktop Chrome user agent: a shopper, not a bot.
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
