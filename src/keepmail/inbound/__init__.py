"""keepmail.inbound"""
