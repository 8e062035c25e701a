"""keepmail.outbound"""
