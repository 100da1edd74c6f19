"""tempolens.stats"""
