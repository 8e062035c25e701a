"""keepmail.smtp"""
