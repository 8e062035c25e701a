"""keepmail.imap"""
