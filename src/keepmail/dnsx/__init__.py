"""keepmail.dnsx"""
