"""Writes tests/heldout/replies.jsonl: realistic replies with a careful grader's verdict.

Written before the scorer was tuned and never used while tuning; read only by the final check
(`llamaberry eval --modes single` against a fake server that returns each reply as written).
Each record: question, answer (the gold, in the benchmark's own form), reply, right.
"""

import json
from pathlib import Path

R = []


def add(question, answer, reply, right, **extra):
    R.append({"question": question, "answer": answer, "reply": reply, "right": right, **extra})


# GSM8K-style numbers
add(
    "A shop had 120 apples and sold 45. How many are left?",
    "Natalia...\n#### 75",
    "The shop started with 120 apples.\n120 - 45 = 75\n\nSo there are **75** apples left.",
    True,
)
add(
    "Tom pays $12 for 3 books. What does one book cost?",
    "#### 4",
    "Each book costs 12 / 3 = $4.\n\nFinal answer: $4",
    True,
)
add(
    "A train goes 60 km/h for 2.5 hours. How far?",
    "#### 150",
    "Distance = speed × time = 60 × 2.5 = 150 km. The train travels 150 km.",
    True,
)
add(
    "How many legs do 7 spiders have?",
    "#### 56",
    "A spider has 8 legs. 7 × 8 = 54.\n\nThe answer is 54.",
    False,
)
add(
    "The temperature was 3 degrees and dropped by 10. What is it now?",
    "#### -7",
    "Starting at 3 °C and dropping 10 degrees gives 3 − 10 = −7 °C.\n\nAnswer: −7 °C",
    True,
)
add(
    "The temperature was 3 degrees and dropped by 10. What is it now? (b)",
    "#### -7",
    "3 - 10 = 7, so the temperature is now 7 degrees.",
    False,
)
add(
    "Jane had $20 and owes $25. What is her balance?",
    "#### -5",
    "Her balance is 20 - 25, which means she is at **-$5**.",
    True,
)
add("What is 12 * 11?", "#### 132", "12 * 11 is 132.", True)
add("What is 9 + 10?", "#### 19", "9 + 10 is 21.", False)
add(
    "How many minutes are in 3 hours?",
    "#### 180",
    "There are 60 minutes in an hour, so 3 hours have 3 × 60 = 180 minutes.\n\nI hope this helps with your 2 homework problems!",
    True,
)
add(
    "A baker makes 4 trays of 12 muffins. How many muffins?",
    "#### 48",
    "4 trays × 12 muffins = **48 muffins**.\n\nLet me know if you have any other questions about the 4 trays!",
    True,
)
add(
    "A farmer has 3 cows and 5 pigs. How many animals?",
    "#### 8",
    "Answer: 3 cows and 5 pigs, 8 animals in total.",
    True,
)
add("Is the result 10 or 12? Compute 3 * 4.", "#### 12", "It is not 10, but 12.", True)
add(
    "Sam reads 25 pages a day for 8 days. Pages read?",
    "#### 200",
    "Day total: **25** pages.\nOver 8 days: 25 × 8 = 200 pages.\n\nSo Sam reads 200 pages.",
    True,
)
add(
    "A car costs $18,000 after a $2,000 discount. Original price?",
    "#### 20000",
    "Original price = 18,000 + 2,000 = $20,000.\n\n#### 20000",
    True,
)
add(
    "Speed of light in m/s, to one significant figure?",
    "300000000",
    "The speed of light is about 3 × 10^8 m/s.",
    True,
)
add("Write 0.0015 in scientific notation value.", "0.0015", "That is 1.5e-3.", True)
add(
    "One and a half pizzas plus two more: how many pizzas?",
    "3.5",
    "1.5 + 2 = $3\\frac{1}{2}$ pizzas.",
    True,
)
add("Count to a thousand: what number?", "1000", "The number is $1,\\!000$.", True)
add("Divide 3 by 4.", "0.75", "The result is $\\frac34$.", True)

# MATH-style
add("Simplify 6/8.", "\\frac{3}{4}", "Dividing by 2: $\\frac{6}{8} = \\boxed{0.75}$", True)
add(
    "Simplify sqrt(12).",
    "2\\sqrt{3}",
    "$\\sqrt{12} = \\sqrt{4 \\cdot 3} = \\boxed{2 \\sqrt{3}}$",
    True,
)
add("Solve 3x = 6.", "x=2", "Dividing both sides by 3 gives $\\boxed{2}$.", True)
add(
    "Find the point where y=x+1 meets y=2x-1.",
    "(2,3)",
    "Setting x+1 = 2x-1 gives x = 2, y = 3, so $\\boxed{(2, 3)}$.",
    True,
)
add("Avogadro's number?", "6.02e23", "About $6.02 \\times 10^{23}$ per mole.", True)
add("Simplify sqrt(18).", "3\\sqrt{2}", "$\\sqrt{18} = \\boxed{2\\sqrt{3}}$", False)
add(
    "Compute 1/3 + 1/6.",
    "\\frac{1}{2}",
    "$\\frac13 + \\frac16 = \\frac{2}{6} + \\frac{1}{6} = \\frac{3}{6} = \\boxed{\\frac{1}{2}}$",
    True,
)
add("Compute 2^5.", "32", "We have $2^5 = 32$. Therefore the answer is $\\boxed{32}$.", True)
add(
    "What is the smallest prime above 20?",
    "23",
    "Checking 21 (3·7) and 22 (2·11), we reach $\\boxed{23}$. Wait, 21 is composite, so yes, 23.",
    True,
)
add("Solve x^2 = 9 for x > 0.", "3", "$x = \\pm 3$, and with $x>0$ we get $\\boxed{-3}$.", False)

# multiple choice
add(
    "Which organelle makes ATP?\nA. Nucleus\nB. Mitochondria\nC. Ribosome\nD. Golgi",
    "B",
    "The correct option is B. Mitochondria produce most of the cell's ATP.",
    True,
)
add(
    "Which is a noble gas?\nA. O\nB. N\nC. H\nD. Ne",
    "D",
    "Option A is wrong. Option B is wrong. Option C is wrong as well. So D.",
    True,
)
add(
    "What keeps a car on a curve?\nA. Gravity\nB. Inertia\nC. Friction\nD. Lift",
    "C",
    "(A) seems possible, but (B) is not a force, so the answer has to be C.",
    True,
)
add(
    "Largest planet?\nA. Mars\nB. Jupiter\nC. Saturn\nD. Venus",
    "B",
    "I'm torn between B and C. After thinking it over, B is correct.",
    True,
)
add(
    "Smallest prime?\nA. 0\nB. 1\nC. 2\nD. 3",
    "C",
    "**Answer: (C) 2**\n\nTwo is the only even prime.",
    True,
)
add(
    "Boiling point of water at sea level?\nA. 90\nB. 100\nC. 110\nD. 120",
    "B",
    "Water boils at 100 °C at sea level, which is option **A**... no wait, that's 90. The answer is B.",
    True,
)
add("Capital of Japan?\nA. Osaka\nB. Kyoto\nC. Tokyo\nD. Nagoya", "C", "The answer is A.", False)
add(
    "Which is a mammal?\nA. Shark\nB. Dolphin\nC. Trout\nD. Eel",
    "B",
    "Dolphins breathe air and nurse their young.\n\nFinal Answer: B",
    True,
)
add(
    "Which gas do plants absorb?\nA. Oxygen\nB. Nitrogen\nC. CO2\nD. Helium",
    "C",
    "Plants take in carbon dioxide for photosynthesis, so A is out and D is out. The answer is (C).",
    True,
)
add("2+2?\nA. 3\nB. 4\nC. 5\nD. 6", "B", "D", False)

# yes/no
add(
    "Is the sky blue on a clear day?",
    True,
    "No evidence suggests otherwise, so the statement is true.",
    True,
)
add("Can penguins fly?", False, "Penguins are birds, but they cannot fly. No.", True)
add(
    "Is 17 a prime number?",
    "yes",
    "17 has no divisors other than 1 and itself, so yes, it is prime.",
    True,
)
add("Is 21 a prime number?", "no", "21 = 3 × 7, so the answer is yes.", False)
add(
    "Does water freeze at 0 °C?",
    True,
    "Yes. Pure water freezes at 0 °C at standard pressure.",
    True,
)
add("Is the Earth flat?", False, "False. The Earth is an oblate spheroid.", True)

# short text
add("Which city is the capital of France?", ["Paris"], "It's not Lyon, it's Paris.", True)
add("Which city is the capital of France? (2)", ["Paris"], "It's not Paris, it's Lyon.", False)
add("Who was the first US president?", ["George Washington", "Washington"], "**Washington**", True)
add(
    "Who was the first US president? (2)",
    ["George Washington"],
    "The first president was **Washington**.",
    True,
)
add(
    "Who wrote Hamlet?",
    ["William Shakespeare", "Shakespeare"],
    "Hamlet was written by Christopher Marlowe.",
    False,
)
add(
    "What is the chemical symbol for gold?",
    ["Au"],
    "The symbol for gold is **Au** (from Latin aurum).",
    True,
)
add("Largest ocean?", ["Pacific Ocean", "Pacific"], "The Pacific Ocean is the largest.", True)
add(
    "Largest ocean? (2)",
    ["Pacific Ocean", "Pacific"],
    "The Atlantic is the largest ocean, not the Pacific.",
    False,
)

out = Path(__file__).with_name("replies.jsonl")
out.write_text("".join(json.dumps(r) + "\n" for r in R), encoding="utf-8")
print(len(R), "replies written to", out)
