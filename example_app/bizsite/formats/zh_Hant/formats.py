# Amounts in Taiwan are written with a comma every three digits
# (NT$ 1,250,000); Django's zh_Hant defaults use no separator.
THOUSAND_SEPARATOR = ","
NUMBER_GROUPING = 3
