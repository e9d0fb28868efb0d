print("otpd")
