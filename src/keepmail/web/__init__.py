"""keepmail.web"""
