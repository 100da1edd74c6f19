"""tempolens.saes"""
