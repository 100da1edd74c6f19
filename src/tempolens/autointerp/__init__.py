"""tempolens.autointerp"""
