"""mailserver: IMAP4, POP3 and SMTP on one Twisted reactor and one storage core."""

__version__ = "0.1.0"
