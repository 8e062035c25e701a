"""keepmail.abuse"""
