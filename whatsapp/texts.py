"""What the channel itself says to citizens (in Indonesian), when Rasa cannot or need not answer.

These cannot live in domain.yml: the apology is sent precisely when Rasa or the action server
failed, and the others answer before a message reaches Rasa at all.
"""

# The same words as the REST channel's apology, so every channel says it alike.
APOLOGY = "Maaf, layanan sedang gangguan, silakan coba lagi sebentar lagi."

UNSUPPORTED = ("Maaf, saya hanya dapat membaca pesan teks dan pilihan dari tombol atau daftar. "
               "Silakan ketik pesan Anda, misalnya \"download sertifikat\", atau ketik *menu*.")

TOO_LONG = "Maaf, pesan terlalu panjang. Mohon kirim pesan yang lebih singkat (maksimal 2000 karakter)."

CHOOSE_ONE = "Silakan pilih:"
LIST_BUTTON = "Lihat pilihan"
TYPE_YOUR_CHOICE = "Balas dengan mengetik pilihan Anda."
CERTIFICATE_CAPTION = "Sertifikat vaksin COVID-19 Anda"
