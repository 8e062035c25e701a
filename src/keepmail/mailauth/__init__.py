"""keepmail.mailauth"""
