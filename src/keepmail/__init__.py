"""keepmail: an organization's own mail server in one program.

MX, submission, outbound queue, IMAP, spam filter, outbound-abuse guard and
admin console, with mail stored encrypted and every SMTP transaction recorded.
"""

__version__ = "0.1.0"
