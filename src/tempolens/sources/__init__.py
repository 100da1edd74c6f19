"""tempolens.sources"""
